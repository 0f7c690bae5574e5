"""fedheart's core: data, preprocessing, model, training, privacy accounting, tracking and reports,
in plain Python that knows nothing of Flower (the README's Layout lists the modules).
``server_app`` and ``client_app`` translate between Flower messages and these modules."""

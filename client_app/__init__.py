"""A hospital: a Flower ClientApp over the fedheart core."""

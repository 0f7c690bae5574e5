"""The aggregator: a Flower ServerApp over the fedheart core."""

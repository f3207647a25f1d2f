"""The machinery of the `frozen` strategy: the pooling a checkpoint was trained for, and
backbone features computed once (plugins/strategies.py registers the strategy)."""

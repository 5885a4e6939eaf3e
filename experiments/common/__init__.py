"""What every layer of ``experiments`` shares: the strict config loader and where MLflow writes."""

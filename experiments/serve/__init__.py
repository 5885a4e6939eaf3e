"""HeLM as an MLflow pyfunc and resumable batch scoring of cohorts (local or Ray Data)."""

"""What a finished run shows: the HTML report, its browser check, cohort figures and notebook loaders."""

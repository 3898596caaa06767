"""The `Engine` facade the UI and the API call (`facade`), its picture tools (`tools`), and the one
job queue (`jobs`)."""

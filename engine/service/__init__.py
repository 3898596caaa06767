"""The `Engine` facade the UI and the API call (`facade`), the services it composes (`upscaling`,
`control`), the one job queue (`jobs`) and what it knows of memory (`memory`)."""

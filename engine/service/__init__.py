"""The `Engine` facade the UI and the API call (`facade`), the services it composes (`upscaling`,
`control`), and the one job queue (`jobs`)."""

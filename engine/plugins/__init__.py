"""Extensions: the hook stages and their typed contexts (`hooks`), where the pipelines fire them
(`firing`), the loader and installer, and scripts that take a job over."""

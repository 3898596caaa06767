"""Pieces several tabs place: the prompt row and sampling controls, the extensions' panels, Extra
networks, styles, the ControlNet units panel and the quick-settings bar."""

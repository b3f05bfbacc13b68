"""The screens of the critui TUI, one per file."""

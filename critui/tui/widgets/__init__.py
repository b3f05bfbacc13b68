"""Small reusable widgets of the critui TUI."""

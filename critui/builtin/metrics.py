"""Built-in metrics (being written): fisher."""
from critui.hookspecs import hookimpl


@hookimpl
def critui_register_metrics(register):
    pass

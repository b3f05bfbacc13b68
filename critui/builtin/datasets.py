"""Built-in datasets (being written): synthetic and cifar10."""
from critui.hookspecs import hookimpl


@hookimpl
def critui_register_datasets(register):
    pass

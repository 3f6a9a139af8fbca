"""sdpo-serve: the pieces shared by the gateway and the workers (CLI, contract), torch-free."""

__version__ = "0.1.0"

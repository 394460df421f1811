"""CLI sub-commands: each module has HELP, add_arguments(parser) and run(args) -> exit code."""
from . import evaluate, list_, train

COMMANDS = {"list": list_, "train": train, "evaluate": evaluate}

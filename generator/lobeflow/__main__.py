"""`python -m lobeflow`: the same as the `lobeflow` command."""

from lobeflow.commands.main import main

main()

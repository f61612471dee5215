"""`python -m lobeflow.engine`: the same as `lobeflow dev`."""

from lobeflow.engine.command import main

main()

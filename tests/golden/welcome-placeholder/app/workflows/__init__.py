"""Every workflow of this app: each subpackage is one workflow exposing `build_router()`.

`create_app` mounts them all, so adding a workflow needs no change here or in `main.py`.
"""

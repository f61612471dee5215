"""The browser console: passes, their fan-out trees, runs, failures, flow control, start.

Served by `lobeflow dev` on the engine's port at `/console`, and by `lobeflow console`
against any QStash. Plain HTML/CSS/JS shipped in this package (`static/`), no build step.
"""

"""FastAPI app running durable Upstash Workflow pipelines (`main.create_app`)."""

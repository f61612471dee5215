"""shop: a FastAPI app running durable Upstash Workflow pipelines."""

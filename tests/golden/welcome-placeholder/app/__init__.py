"""FastAPI app running durable Upstash Workflow pipelines.

Project: shop.
"""

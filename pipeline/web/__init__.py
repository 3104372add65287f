"""The tenant anomaly pages and their JSON API, and who may read them."""

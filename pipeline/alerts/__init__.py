"""The anomaly rules (pure), what they read, the watermark loop that evaluates
closed minutes, and notifications.
"""

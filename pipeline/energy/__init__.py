"""The energy domain: measured GPU energy per node-window, its split over the
attempts served, estimates for external APIs, and carbon.
"""

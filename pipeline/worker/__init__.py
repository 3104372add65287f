"""The faust worker: the app and its topics, thin agents, process assembly, the
drain and the stop signal.
"""

"""The cache domain: cache events into hit, miss and eviction windows, valued in dollars."""

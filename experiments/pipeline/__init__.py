"""The main job (``spirolm run``): the run config tree, cached stages, and the baselines and HeLM stages."""

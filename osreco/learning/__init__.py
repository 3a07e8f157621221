"""The learning loop: ``osreco learn`` turns logged traffic into better CF models and fusion weights
(:mod:`osreco.learning.learn`); ``osreco simulate`` proves it on simulated users."""

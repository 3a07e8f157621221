"""osreco.cf: collaborative filtering — interactions and events in, a served model and stored factors out.

``interactions`` reads interaction files, ``events`` the events index, ``privacy`` pseudonymizes
user ids, ``forget`` forgets a user everywhere (tombstone, saved model; imported as a module,
``from osreco.cf.forget import forget``); ``train`` fits ALS, EASE,
co-occurrence and popularity; ``model`` is the served ``CFModel`` (fold-in, scoring);
``store`` writes factors and user vectors to OpenSearch.
"""

from osreco.cf.events import Event, expire_events, from_ubi, write_events
from osreco.cf.interactions import Interaction, ReadConfig, read_interactions
from osreco.cf.model import CFConfig, CFModel
from osreco.cf.privacy import PrivacyConfig, pseudonymize
from osreco.cf.store import (
                             StoreConfig,
                             read_meta,
                             read_user_vector,
                             refresh_user_vector,
                             refresh_user_vectors,
                             write_item_factors,
                             write_meta,
                             write_user_vectors,
)
from osreco.cf.train import train_models

__all__ = ["CFConfig", "CFModel", "train_models",
           "StoreConfig", "read_meta", "read_user_vector", "refresh_user_vector", "refresh_user_vectors",
           "write_item_factors", "write_meta", "write_user_vectors",
           "Event", "expire_events", "from_ubi", "write_events",
           "Interaction", "ReadConfig", "read_interactions", "PrivacyConfig", "pseudonymize"]

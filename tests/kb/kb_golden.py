"""Golden data for the kb tests: a 3-product catalog with hostile ids, a 3-level taxonomy, one run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from prodkg.kb.triples import ModelInfo, Quad, RunInfo, catalog_quads, prediction_quads, run_quads, taxonomy_quads

GOLDEN_TRIG = Path(__file__).parent / "data" / "golden.trig"

MUG, KETTLE, CUP = "mug #1 / blue", "kettle>2", "zürich-3"
ATTRIBUTES = ["color", "brand", "capacity"]
CONCEPTS = [
    ("kitchenware", None),
    ("drinkware", "kitchenware"),
    ("mug", "drinkware"),
    ("cup", "drinkware"),
    ("kettle", "kitchenware"),
]


@dataclass
class Golden:
    products: pd.DataFrame
    predictions: pd.DataFrame
    run: RunInfo

    def quads(self, threshold: float = 0.5) -> list[Quad]:
        return (
            catalog_quads(self.products, catalog="shop", attributes=ATTRIBUTES, scheme="kitchen")
            + taxonomy_quads("kitchen", CONCEPTS)
            + run_quads(self.run)
            + prediction_quads(self.predictions, self.run, catalog="shop", scheme="kitchen", threshold=threshold)
        )


def make_golden() -> Golden:
    products = pd.DataFrame(
        {
            "product_id": [MUG, KETTLE, CUP],
            "title": ["Blue mug", "Kettle", "Café cup"],
            "description": ['A "big" mug\nfor tea', "", None],
            "image": ["img/mug 1.jpg", None, "https://example.com/cup.png"],
            "domain": ["amazon", "amazon", "webcam"],
            # the catalog says the cup is a mug: queries over predictions must not count this
            "category": ["mug", "kettle", "mug"],
            "color": ["blue", None, None],
            "brand": [None, "Acme", None],
            "capacity": ["350 ml", None, None],
        }
    )
    predictions = pd.DataFrame(
        {
            "product_id": [MUG, KETTLE, CUP, MUG, KETTLE],
            "task": ["category", "category", "category", "color", "capacity"],
            "value": ["mug", "kettle", "cup", "navy", "1.7 l"],
            "confidence": [0.9, 0.4, 0.75, 0.3, 0.8],
            "model": ["head-v1"] * 5,
        }
    )
    run = RunInfo(
        run_id="run-1",
        started=datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc),
        ended=datetime(2024, 5, 1, 12, 30, 0, 500000, tzinfo=timezone.utc),
        catalog="shop",
        method="dann",
        source_domains=["amazon"],
        target_domains=["webcam"],
        models=[ModelInfo("head-v1", "linear head", "head", {"dim": 384})],
        config_hash="abc123",
    )
    return Golden(products, predictions, run)

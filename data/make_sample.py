"""Writes the small self-made sample catalog in data/sample/ (deterministic; rerun to regenerate)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent / "sample"
COLOURS = {"red": (200, 30, 40), "blue": (30, 60, 200), "green": (40, 160, 60)}
# category -> (web shop wording, supplier-feed wording, shape drawn)
ITEMS = {
    "mug": (["{c} ceramic coffee mug, 350 ml", "Stoneware tea cup in {c}", "{C} enamel camping mug"],
            ["MUG CERAMIC 35CL {U}", "CUP STONEWARE {U} 0.3L", "ENAMEL MUG CAMP {U}"], "ellipse"),
    "t-shirt": (["Organic cotton t-shirt in {c}", "{C} crew-neck tee, slim fit", "Men's {c} cotton shirt, short sleeves"],
                ["TSHIRT ORG COTTON {U} M", "TEE CREWNECK {U} SLIM L", "SHIRT SS COTTON {U} XL"], "rectangle"),
    "backpack": (["{C} hiking backpack, 30 litres", "Laptop rucksack in {c} with padded straps", "{C} school bag, water resistant"],
                 ["BACKPACK HIKE 30L {U}", "RUCKSACK LAPTOP {U} 15IN", "SCHOOLBAG WR {U}"], "polygon"),
}


def draw(shape: str, colour: tuple[int, int, int], rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (96, 96), (245, 245, 245))
    d = ImageDraw.Draw(img)
    jitter = rng.randint(-6, 6)
    if shape == "ellipse":
        d.ellipse((20 + jitter, 24, 76 + jitter, 80), fill=colour)
    elif shape == "rectangle":
        d.rectangle((18, 20 + jitter, 78, 82 + jitter), fill=colour)
    else:
        d.polygon([(48 + jitter, 12), (84, 84), (12, 84)], fill=colour)
    return img


def main() -> None:
    rng = random.Random(7)
    (HERE / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for domain, style in (("webshop", 0), ("supplier", 1)):
        for category, (web, feed, shape) in ITEMS.items():
            for colour, rgb in COLOURS.items():
                for k, template in enumerate(web if style == 0 else feed):
                    pid = f"{domain[:3].upper()}-{category[:3]}-{colour}-{k}"
                    image = f"images/{pid}.png"
                    draw(shape, rgb, rng).save(HERE / image)
                    title = template.format(c=colour, C=colour.capitalize(), U=colour.upper())
                    rows.append({"product_id": pid, "title": title, "description": "", "image": image,
                                 "domain": domain, "category": category, "color": colour})
    with open(HERE / "catalog.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} products to {HERE / 'catalog.csv'}")


if __name__ == "__main__":
    main()

"""Outfit photos as consumer-to-shop pairs of garment crops, so the embedding can learn from worn garments.

Each garment of a shopper photo becomes the picture serving would search for it (`garment_crop` of its box), each
shop photo the picture serving indexes (`square_crop` of its garment), written in DeepFashion's Consumer-to-shop
layout (``img/<item>/{consumer,shop}_NN.jpg`` and ``Eval/list_eval_partition.txt``), which `fashion train` reads.
A garment whose item has no shop photo in the same split has nothing to be paired with and is left out.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from shared.data.outfits import OutfitBenchmark
from shared.detection.crop import garment_crop, square_crop
from shared.errors import InvalidInput

PARTITION = "Eval/list_eval_partition.txt"


def write_garment_pairs(bench: OutfitBenchmark, out: Path, *, split: str = "train", progress: bool = True) -> int:
    """Write ``split``'s garment crops and their pairs under ``out``; returns the number of pairs."""
    crops: dict[str, dict[str, list[str]]] = {"consumer": defaultdict(list), "shop": defaultdict(list)}
    photos = bench.split(split)
    shop_keys = {p.match_key(g) for p in photos if p.domain == "shop" for g in p.garments[:1]}
    for photo in tqdm(photos, desc="writing garment crops", disable=not progress, unit="photo"):
        shop = photo.domain == "shop"
        domain = "shop" if shop else "consumer"
        # A shop photo shows its one item (the gallery indexes its first garment); a shopper photo, every garment.
        wanted = [g for g in (photo.garments[:1] if shop else photo.garments) if photo.match_key(g) in shop_keys]
        if not wanted:
            continue
        with Image.open(bench.path(photo)) as image:
            image = image.convert("RGB")
            for garment in wanted:
                key = str(photo.match_key(garment)).replace("/", "_")  # (pair_id/style) -> one path token
                store = crops[domain]
                name = f"img/{key}/{domain}_{len(store[key]):02d}.jpg"
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                (square_crop(image, garment.box) if shop else garment_crop(image, garment.box)).save(out / name,
                                                                                                     quality=92)
                store[key].append(name)
    consumers, shops = crops["consumer"], crops["shop"]
    pairs = [(c, s, key) for key in sorted(consumers) for c in consumers[key] for s in shops[key]]
    if not pairs:
        raise InvalidInput(f"expected garments in the {split} split of {bench.root} whose items have shop photos "
                           "(matched by item id, or pair_id and style), found none")
    (out / PARTITION).parent.mkdir(parents=True, exist_ok=True)
    lines = [str(len(pairs)), "image_pair_name_1 image_pair_name_2 item_id evaluation_status",
             *(f"{c} {s} {key} train" for c, s, key in pairs)]
    (out / PARTITION).write_text("\n".join(lines) + "\n")
    return len(pairs)

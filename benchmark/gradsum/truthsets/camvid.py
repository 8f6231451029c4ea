"""CamVid's original 32-class colour table (Brostow et al. 2009), mapped onto Cityscapes classes.

The colours are those of the release's `class_dict.csv` (also the Semantic-Segmentation-Suite / Kaggle
copy, whose `<split>_labels/<stem>_L.png` use them). Where Cityscapes has no such class the mapping
follows Cityscapes' own annotation rules: lane markings (drivable or not) and the road shoulder are
part of `road` (Cityscapes labels markings as the surface they are painted on, as the synthetic set
does); movable objects without a class of their own (animals, prams, other moving things) are
`dynamic`, fixed ones (traffic cones) `static`; misc text joins `traffic sign`, as in SegNet's 11-class
grouping; a combined truck/bus class becomes `truck`, SUV/pickup `car`, bicyclist `bicycle` (as in
the `camvid` spec; map it to `rider` in your spec's `mapping` for the person on it).
"""

from __future__ import annotations

from gradsum.truthsets.labels import ClassInfo, ClassTable, cityscapes_class

#: (CamVid class, colour in class_dict.csv, Cityscapes class), in class_dict.csv order; own id = row
CAMVID32: tuple[tuple[str, tuple[int, int, int], str], ...] = (
    ("Animal", (64, 128, 64), "dynamic"),
    ("Archway", (192, 0, 128), "building"),
    ("Bicyclist", (0, 128, 192), "bicycle"),
    ("Bridge", (0, 128, 64), "bridge"),
    ("Building", (128, 0, 0), "building"),
    ("Car", (64, 0, 128), "car"),
    ("CartLuggagePram", (64, 0, 192), "dynamic"),
    ("Child", (192, 128, 64), "person"),
    ("Column_Pole", (192, 192, 128), "pole"),
    ("Fence", (64, 64, 128), "fence"),
    ("LaneMkgsDriv", (128, 0, 192), "road"),
    ("LaneMkgsNonDriv", (192, 0, 64), "road"),
    ("Misc_Text", (128, 128, 64), "traffic sign"),
    ("MotorcycleScooter", (192, 0, 192), "motorcycle"),
    ("OtherMoving", (128, 64, 64), "dynamic"),
    ("ParkingBlock", (64, 192, 128), "parking"),
    ("Pedestrian", (64, 64, 0), "person"),
    ("Road", (128, 64, 128), "road"),
    ("RoadShoulder", (128, 128, 192), "road"),
    ("Sidewalk", (0, 0, 192), "sidewalk"),
    ("SignSymbol", (192, 128, 128), "traffic sign"),
    ("Sky", (128, 128, 128), "sky"),
    ("SUVPickupTruck", (64, 128, 192), "car"),
    ("TrafficCone", (0, 0, 64), "static"),
    ("TrafficLight", (0, 64, 64), "traffic light"),
    ("Train", (192, 64, 128), "train"),
    ("Tree", (128, 128, 0), "vegetation"),
    ("Truck_Bus", (192, 128, 192), "truck"),
    ("Tunnel", (64, 0, 64), "tunnel"),
    ("VegetationMisc", (192, 192, 0), "vegetation"),
    ("Void", (0, 0, 0), "unlabeled"),
    ("Wall", (64, 192, 0), "wall"),
)


def camvid32_table() -> ClassTable:
    """The 32 CamVid classes with their release colours and Cityscapes mapping (spec `classes: camvid32`)."""
    classes = []
    for own_id, (name, colour, target_name) in enumerate(CAMVID32):
        target = cityscapes_class(target_name)
        classes.append(
            ClassInfo(own_id, name, target.category, colour, target.ignore, target.train_id, target.id)
        )
    return ClassTable(tuple(classes), name="camvid32")

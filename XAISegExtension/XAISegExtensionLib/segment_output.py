"""The mask as a segment: a new segmentation node (the default) or one more segment in a
segmentation the user chose (its other segments are kept), with a standard terminology entry and
an optional closed-surface (3D) representation.

Terminology: SNOMED CT codes for the structures below are those of 3D Slicer's own
"General Anatomy" terminology list (Modules/Loadable/Terminologies/Resources/
SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json); a name not in the table gets the
generic entry "Anatomical structure" (SCT 91723000).  "left"/"right" in the name become the
laterality modifier where Slicer's list gives the structure one.
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from . import mrml

RUN_TAG = "XAISeg.runKey"
CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
REGION_CONTEXT = "Anatomic codes - DICOM master list"
CATEGORY = ("123037004", "SCT", "Anatomical Structure")
GENERIC = ("91723000", "SCT", "Anatomical structure")
RIGHT, LEFT = ("24028007", "SCT", "Right"), ("7771000", "SCT", "Left")

# name -> (SNOMED CT code, meaning as in Slicer's list, has laterality)
STRUCTURES: Dict[str, Tuple[str, str, bool]] = {
    "caudate nucleus": ("11000004", "Caudate nucleus", True),
    "thalamus": ("119406000", "Thalamus", True),
    "putamen": ("89278009", "Putamen", True),
    "globus pallidus": ("14738005", "Globus pallidus", True),
    "amygdala": ("4958002", "Amygdala", True),
    "corpus callosum": ("88442005", "Corpus callosum", False),
    "lateral ventricle": ("66720007", "Lateral ventricle", True),
    "brain": ("12738006", "Brain", False),
    "brainstem midbrain": ("61962009", "Midbrain", False),
    "spinal cord": ("2748008", "Spinal cord", False),
    "optic chiasm": ("244453006", "Optic chiasm", False),
    "pituitary": ("56329008", "Pituitary", False),
    "eyeball": ("79652003", "Eyeball", True),
    "liver": ("10200004", "Liver", False),
    "spleen": ("78961009", "Spleen", False),
    "pancreas": ("15776009", "Pancreas", False),
    "kidney": ("64033007", "Kidney", True),
    "adrenal gland": ("23451007", "Adrenal gland", True),
    "gallbladder": ("28231008", "Gallbladder", False),
    "stomach": ("69695003", "Stomach", False),
    "duodenum": ("38848004", "Duodenum", False),
    "colon": ("71854001", "Colon", False),
    "small intestine": ("30315005", "Small Intestine", False),
    "esophagus": ("32849002", "Esophagus", False),
    "bladder": ("89837001", "Bladder", False),
    "prostate": ("41216001", "Prostate", False),
    "lung": ("39607008", "Lung", True),
    "heart": ("80891009", "Heart", False),
    "aorta": ("15825003", "Aorta", False),
    "trachea": ("44567001", "Trachea", False),
    "thyroid": ("69748006", "Thyroid", False),
    "mandible": ("91609006", "Mandible", False),
    "skull": ("89546000", "Skull", False),
    "sternum": ("56873002", "Sternum", False),
}
SYNONYMS = {"caudate": "caudate nucleus", "globus pallidum": "globus pallidus", "pallidum": "globus pallidus",
            "urinary bladder": "bladder", "oesophagus": "esophagus", "thyroid gland": "thyroid",
            "gall bladder": "gallbladder", "midbrain": "brainstem midbrain", "kidneys": "kidney", "lungs": "lung",
            "pituitary gland": "pituitary", "ventricle": "lateral ventricle", "eye": "eyeball"}


def lookup(name: str) -> Tuple[Tuple[str, str, str], Optional[Tuple[str, str, str]]]:
    """``(type, modifier)`` code triples (value, scheme, meaning) for a structure name such as
    "left caudate"; the generic "Anatomical structure" type when the name is not in the table."""
    words = re.sub(r"[^a-z ]", " ", (name or "").lower()).split()
    side = None
    for word, code in (("left", LEFT), ("l", LEFT), ("lt", LEFT), ("right", RIGHT), ("r", RIGHT), ("rt", RIGHT)):
        if word in words:
            side = code
            words = [w for w in words if w != word]
            break
    key = " ".join(words)
    key = SYNONYMS.get(key, key)
    if key not in STRUCTURES:
        return GENERIC, None
    value, meaning, lateral = STRUCTURES[key]
    return (value, "SCT", meaning), (side if lateral else None)


def terminology_string(name: str) -> str:
    """Slicer's serialised terminology entry for a structure name (the segment's tag value)."""
    import slicer

    (tv, ts, tm), modifier = lookup(name)
    mv, ms, mm = modifier or ("", "", "")
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        CONTEXT, CATEGORY[0], CATEGORY[1], CATEGORY[2], tv, ts, tm, mv, ms, mm,
        REGION_CONTEXT, "", "", "", "", "", "")


def set_terminology(segment, name: str) -> str:
    import slicer

    text = terminology_string(name)
    segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), text)
    return text


def write_mask(scene, mask: np.ndarray, reference_node, structure: str, *, run_key: str, node_name: str,
               segmentation=None, color: Sequence[float] = (0.95, 0.85, 0.2)) -> Tuple[object, str]:
    """Put ``mask`` (on ``reference_node``'s grid) into a segmentation; returns ``(node, segmentId)``.

    segmentation None: a new node named ``node_name`` (today's behaviour).  A segmentation node:
    one segment is added and its other segments are kept; a segment this run (``run_key``) added
    earlier is replaced rather than duplicated.
    """
    import slicer

    if segmentation is None:
        node = mrml.add_segmentation(scene, mask, reference_node, node_name, structure, color)
        segment_id = node.GetSegmentation().GetNthSegmentID(0)
    else:
        if not segmentation.IsA("vtkMRMLSegmentationNode"):
            raise mrml.InputError(f"output '{segmentation.GetName()}' is a {segmentation.GetClassName()}; "
                                  "expected a segmentation node")
        node = segmentation
        seg = node.GetSegmentation()
        for i in reversed(range(seg.GetNumberOfSegments())):
            if segment_tag(seg.GetNthSegment(i), RUN_TAG) == run_key:
                seg.RemoveSegment(seg.GetNthSegmentID(i))
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        if seg.GetNumberOfSegments() == 0:
            node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
        label = mrml.add_volume(scene, mask.astype(np.uint8), reference_node, node_name + " (import)", labelmap=True)
        try:
            image = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(label)
            segment_id = node.AddSegmentFromBinaryLabelmapRepresentation(image, structure, list(color))
        finally:
            mrml.remove_node(scene, label)
        if not segment_id:
            raise RuntimeError(f"could not add the mask to segmentation '{node.GetName()}'")
    segment = node.GetSegmentation().GetSegment(segment_id)
    segment.SetName(structure)
    segment.SetTag(RUN_TAG, run_key)
    set_terminology(segment, structure)
    return node, segment_id


def segment_tag(segment, tag: str) -> Optional[str]:
    """A segment's tag value, or None when it has no such tag."""
    import vtk

    value = vtk.reference("")
    return str(value.get()) if segment.GetTag(tag, value) else None


def show_3d(segmentation_node, visible: bool = True) -> int:
    """Build (or drop) the closed-surface representation and show it in 3D views; returns the
    number of surface points (0 when hidden)."""
    import slicer

    name = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    if not visible:
        segmentation_node.RemoveClosedSurfaceRepresentation()
        return 0
    segmentation_node.CreateClosedSurfaceRepresentation()
    display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetVisibility3D(True)
        display.SetPreferredDisplayRepresentationName3D(name)
    seg = segmentation_node.GetSegmentation()
    points = 0
    for i in range(seg.GetNumberOfSegments()):
        poly = seg.GetNthSegment(i).GetRepresentation(name)
        points += poly.GetNumberOfPoints() if poly is not None else 0
    return points

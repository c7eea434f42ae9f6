"""A slicer-core scene set up the way the 3D Slicer application sets up its own: default colour
tables (Grey for scalar volumes, Labels for label maps) present, and slicer.mrmlScene pointing at it."""
import slicer


def new_scene():
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLScene(scene)  # adds the default colour nodes (it logs that it has no colour files)
    colors.SetMRMLScene(None)
    return scene

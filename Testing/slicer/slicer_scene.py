"""A slicer-core scene set up the way the 3D Slicer application sets up its own: default colour
tables (Grey for scalar volumes, Labels for label maps) present, and slicer.mrmlScene pointing at it;
:func:`add_app_views` adds the default slice views (Red, Yellow, Green) as the application's slice
widgets do."""
import slicer


def new_scene():
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLScene(scene)  # adds the default colour nodes (it logs that it has no colour files)
    colors.SetMRMLScene(None)
    return scene


def add_app_views(scene, size=(512, 512)):
    """Red (axial), Yellow (sagittal) and Green (coronal) slice nodes with their composite nodes,
    made by vtkMRMLSliceLogic as each slice widget of the application makes them; returns the
    slice logics (keep them while the views are used)."""
    import vtk

    logics = []
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        node = logic.AddSliceNode(name)
        for preset in ("Axial", "Sagittal", "Coronal"):  # the application registers these presets
            if not node.HasSliceOrientationPreset(preset):
                matrix = vtk.vtkMatrix3x3()
                getattr(slicer.vtkMRMLSliceNode, f"Get{preset}SliceToRASMatrix")(matrix)
                node.AddSliceOrientationPreset(preset, matrix)
        node.SetOrientation(orientation)
        node.SetDimensions(size[0], size[1], 1)
        logics.append(logic)
    return logics


def add_io_logics(scene, cache_dir):
    """What the application gives a scene for saving and opening MRB files: the Markups module's
    logic (it registers the markups storage nodes, so ROIs and points are written to the bundle)
    and a data I/O manager with a cache folder (``vtkMRMLScene.ReadFromMRB`` unpacks there).
    Returns the logic (keep it while the scene is used)."""
    markups = slicer.vtkSlicerMarkupsLogic()
    markups.SetMRMLScene(scene)
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(str(cache_dir))
    io = slicer.vtkDataIOManager()
    io.SetCacheManager(cache)
    scene.SetDataIOManager(io)
    scene.SetCacheManager(cache)
    return markups

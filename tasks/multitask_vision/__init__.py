"""Multi-task vision task of moopt: MultiMNIST (2 or 3 tasks, LeNet) and CelebA (40
attributes, ResNet-18) on torchvision, one optimizer objective per task.

Entry point: ``moopt run multitask-vision`` (:class:`.adapter.MultitaskVisionTask`).
Nothing heavy is imported here; torchvision and mlxtend load only when data or models are
built (``pip install moopt[vision]``).
"""

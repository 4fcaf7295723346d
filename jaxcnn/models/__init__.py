"""Model zoo. `create(name, num_classes=...)` builds any registered network."""

# Importing each family registers its variants.
from jaxcnn.models import alexnet  # noqa: F401
from jaxcnn.models import efficientdet  # noqa: F401
from jaxcnn.models import efficientnet  # noqa: F401
from jaxcnn.models import lenet  # noqa: F401
from jaxcnn.models import nasnet  # noqa: F401
from jaxcnn.models import resnet  # noqa: F401
from jaxcnn.models import squeezenet  # noqa: F401
from jaxcnn.models.registry import (create, from_config, names, register,
                                    task_of)

__all__ = ['create', 'from_config', 'names', 'register', 'task_of']

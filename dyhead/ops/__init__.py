from .deform_conv import get_default_impl, modulated_deform_conv2d, set_default_impl

__all__ = ["modulated_deform_conv2d", "set_default_impl", "get_default_impl"]

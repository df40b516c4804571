"""A sink that delivers events to REST APIs, such as those of SaaS platforms."""

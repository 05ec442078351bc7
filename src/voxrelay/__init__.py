def hello() -> str:
    return "Hello from voxrelay!"

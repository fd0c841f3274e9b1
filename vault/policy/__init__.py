"""Policy files (TOML) as frozen values, and retention rules. Pure; may import only base modules."""

"""The management API (`/api/v1`): blocks, profiles, events, inventory, signing, preview."""

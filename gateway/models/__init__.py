"""Model definitions (LoopBack JSON) → registry, SQLModel tables, validation and the rows' JSON form."""

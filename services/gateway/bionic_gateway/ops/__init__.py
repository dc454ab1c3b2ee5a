"""Operations endpoints."""

from .prototype_ops import (
                            add_background,
                            background_score,
                            cosine_similarity_maps,
                            fuse_stage_cams,
                            gate_cams,
                            global_average_pool,
                            merge_prototypes,
                            normalize_cams,
                            region_mask_from_cams,
)

__all__ = [
    'cosine_similarity_maps', 'merge_prototypes', 'global_average_pool',
    'normalize_cams', 'fuse_stage_cams', 'background_score', 'add_background',
    'gate_cams', 'region_mask_from_cams'
]

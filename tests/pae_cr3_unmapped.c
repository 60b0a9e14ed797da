/* placeholder */ typedef int placeholder_pae_cr3_unmapped;

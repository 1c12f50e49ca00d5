//! IPVS scheduler configuration: every scheduler the Linux kernel has, the
//! scheduler flags, and what each scheduler means for weights and draining,
//! parsed and validated once from the spellings users write.

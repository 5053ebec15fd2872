"""Small seed sets written for this project, one JSONL file per set (``builtin:NAME``): one per
domain, plus the personas of ``persona-prompts`` (``builtin:personas``) and the writing templates
and issues of ``template-expansion`` (``builtin:writing-templates``, ``builtin:issues``)."""

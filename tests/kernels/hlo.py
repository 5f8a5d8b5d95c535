"""Reading XLA:CPU's compiled HLO in the kernel tests."""
import re


def assert_bfloat16_dots(text: str, count: int) -> None:
  """``text`` (compiled HLO) has exactly ``count`` dots, each of two bfloat16 operands with
  a float32 result: the form XLA:CPU hands to its bfloat16 kernels."""
  types = dict(re.findall(r"%([\w.]+) = (\w+)\[", text))
  dots = re.findall(r"= (\w+)\[[^\]]*\]\{[^}]*\} dot\(%([\w.]+), %([\w.]+)\)", text)
  assert len(dots) == count, text
  for result, lhs, rhs in dots:
    assert (result, types[lhs], types[rhs]) == ("f32", "bf16", "bf16"), text


def assert_onednn_bfloat16_products(text: str, count: int) -> None:
  """``text`` (compiled HLO) has ``count`` oneDNN matmul calls, each reading two bfloat16
  operands, and no dot left to XLA."""
  operands = re.findall(r'custom_call_target="\w*batched_matmul", '
                        r"operand_layout_constraints=\{(\w+)\[[^]]*\]\{[^}]*\}, (\w+)\[", text)
  assert operands == [("bf16", "bf16")] * count and " dot(" not in text, text

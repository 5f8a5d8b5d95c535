// 2-D convolution (NHWC input and output, HWIO kernel), alone or with its bias and ReLU,
// its gradients (the kernel's with the bias's) and a batched matrix product as XLA FFI
// handlers over oneDNN's primitives, which reach AVX512-BF16 and
// AMX where the CPU has them; medjax/kernels/onednn.py builds this file, registers the
// handlers and decides where they are used.
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Every primitive takes its scratch memory from the call: XLA may run two convolutions at
// once, and oneDNN's own scratchpad is shared between primitives.
dnnl::primitive_attr Attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

bool ToDnnl(ffi::DataType type, memory::data_type* out) {
  if (type == ffi::DataType::F32) {
    *out = memory::data_type::f32;
  } else if (type == ffi::DataType::BF16) {
    *out = memory::data_type::bf16;
  } else {
    return false;
  }
  return true;
}

// One convolution's geometry, in oneDNN's (N, C, H, W) / ([G,] O, I, H, W) dimension order;
// ``hwio`` holds the strides of the caller's HWIO kernel in that order. ``bias`` is {O}
// where the convolution adds a float32 bias (empty where not), and ``relu`` whether its
// forward pass applies ReLU after it (a post-op: no second pass over the output).
struct Geometry {
  memory::dims src, weights, hwio, dst, strides, dilation, pad_lo, pad_hi, bias;
  memory::data_type src_type, weights_type, dst_type;
  bool relu = false;

  std::string Key(const char* kind) const {
    std::string key(kind);
    for (const memory::dims* dims :
         {&src, &weights, &dst, &strides, &dilation, &pad_lo, &pad_hi, &bias}) {
      for (auto d : *dims) key += "," + std::to_string(d);
      key += ";";
    }
    key += std::to_string(static_cast<int>(src_type)) + "," +
           std::to_string(static_cast<int>(weights_type)) + "," +
           std::to_string(static_cast<int>(dst_type)) + (relu ? ",relu" : "");
    return key;
  }

  memory::desc Src(memory::data_type type) const { return {src, type, tag::nhwc}; }
  memory::desc Dst(memory::data_type type) const { return {dst, type, tag::nhwc}; }
  memory::desc AnyWeights(memory::data_type type) const { return {weights, type, tag::any}; }
  memory::desc UserWeights(memory::data_type type) const { return {weights, type, hwio}; }
  memory::desc Bias() const { return {bias, memory::data_type::f32, tag::a}; }

  // The forward primitive descriptor, also the hint each backward primitive needs.
  dnnl::convolution_forward::primitive_desc Forward() const {
    auto attr = Attr();
    if (relu) {
      dnnl::post_ops ops;
      ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      attr.set_post_ops(ops);
    }
    const auto kind = dnnl::prop_kind::forward_training;
    const auto direct = dnnl::algorithm::convolution_direct;
    if (bias.empty()) {
      return {Engine(), kind, direct, Src(src_type), AnyWeights(weights_type), Dst(dst_type),
              strides, dilation, pad_lo, pad_hi, attr};
    }
    return {Engine(), kind, direct, Src(src_type), AnyWeights(weights_type), Bias(),
            Dst(dst_type), strides, dilation, pad_lo, pad_hi, attr};
  }
};

// A primitive with the reorder between the caller's HWIO kernel and the layout it wants
// (absent when they agree); built once per geometry, kept for the process.
struct Plan {
  dnnl::primitive primitive;
  memory::desc scratchpad, user_weights, weights, reorder_scratchpad;
  std::unique_ptr<dnnl::reorder> reorder;
};

std::mutex plans_mutex;
std::unordered_map<std::string, std::shared_ptr<Plan>> plans;

template <typename Make>
std::shared_ptr<Plan> Cached(const std::string& key, Make make) {
  std::lock_guard<std::mutex> lock(plans_mutex);
  auto found = plans.find(key);
  if (found != plans.end()) return found->second;
  auto plan = std::make_shared<Plan>(make());
  plans.emplace(key, plan);
  return plan;
}

template <typename Primitive, typename PrimitiveDesc>
Plan WithWeights(const PrimitiveDesc& pd, const memory::desc& user, const memory::desc& wanted,
                 bool into_user) {
  Plan plan{Primitive(pd), pd.scratchpad_desc(), user, wanted, {},
            nullptr};
  if (user != wanted) {
    auto reorder = into_user
        ? dnnl::reorder::primitive_desc(Engine(), wanted, Engine(), user, Attr())
        : dnnl::reorder::primitive_desc(Engine(), user, Engine(), wanted, Attr());
    plan.reorder_scratchpad = reorder.scratchpad_desc();
    plan.reorder = std::make_unique<dnnl::reorder>(reorder);
  }
  return plan;
}

// Reads the NHWC input, HWIO kernel and NHWC output shapes and the window attributes.
ffi::Error Describe(const ffi::AnyBuffer& x, const ffi::AnyBuffer& w, const ffi::AnyBuffer& y,
                    int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_bottom,
                    int64_t pad_left, int64_t pad_right, int64_t groups, Geometry* g) {
  auto xd = x.dimensions(), wd = w.dimensions(), yd = y.dimensions();
  if (xd.size() != 4 || wd.size() != 4 || yd.size() != 4) {
    return ffi::Error::InvalidArgument("medjax oneDNN conv: NHWC / HWIO / NHWC ranks expected");
  }
  if (!ToDnnl(x.element_type(), &g->src_type) || !ToDnnl(w.element_type(), &g->weights_type) ||
      !ToDnnl(y.element_type(), &g->dst_type)) {
    return ffi::Error::InvalidArgument("medjax oneDNN conv: float32 or bfloat16 expected");
  }
  if (groups < 1 || wd[3] % groups != 0 || xd[3] != wd[2] * groups) {
    return ffi::Error::InvalidArgument("medjax oneDNN conv: channels do not split into groups");
  }
  g->src = {xd[0], xd[3], xd[1], xd[2]};
  // HWIO element (h, w, i, o) sits at ((h * KW + w) * I + i) * O + o; output o = group *
  // (O / G) + its index in the group.
  const int64_t o = wd[3], i = wd[2], kw = wd[1];
  if (groups == 1) {
    g->weights = {o, i, wd[0], kw};
    g->hwio = {1, o, kw * i * o, i * o};
  } else {
    g->weights = {groups, o / groups, i, wd[0], kw};
    g->hwio = {o / groups, 1, o, kw * i * o, i * o};
  }
  g->dst = {yd[0], yd[3], yd[1], yd[2]};
  g->strides = {stride_h, stride_w};
  g->dilation = {0, 0};
  g->pad_lo = {pad_top, pad_left};
  g->pad_hi = {pad_bottom, pad_right};
  return ffi::Error::Success();
}

ffi::Error Run(const std::shared_ptr<Plan>& plan, void* weights_data, bool into_user,
               std::unordered_map<int, memory> args, int weights_arg) {
  dnnl::stream stream(Engine());
  memory user(plan->user_weights, Engine(), weights_data);
  args.emplace(DNNL_ARG_SCRATCHPAD, memory(plan->scratchpad, Engine()));
  if (!plan->reorder) {
    args.emplace(weights_arg, user);
    plan->primitive.execute(stream, args);
    stream.wait();
    return ffi::Error::Success();
  }
  memory wanted(plan->weights, Engine());
  memory reorder_scratchpad(plan->reorder_scratchpad, Engine());
  args.emplace(weights_arg, wanted);
  if (!into_user) {
    plan->reorder->execute(stream, {{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, wanted},
                                    {DNNL_ARG_SCRATCHPAD, reorder_scratchpad}});
  }
  plan->primitive.execute(stream, args);
  if (into_user) {
    plan->reorder->execute(stream, {{DNNL_ARG_FROM, wanted}, {DNNL_ARG_TO, user},
                                    {DNNL_ARG_SCRATCHPAD, reorder_scratchpad}});
  }
  stream.wait();
  return ffi::Error::Success();
}

enum class Kind { kForward, kInputGrad, kKernelGrad };

// The primitive for ``kind`` and the reorder between its kernel layout and the caller's.
Plan MakePlan(Kind kind, const Geometry& g) {
  const auto user = g.UserWeights(g.weights_type);
  if (kind == Kind::kForward) {
    auto pd = g.Forward();
    return WithWeights<dnnl::convolution_forward>(pd, user, pd.weights_desc(), false);
  }
  if (kind == Kind::kInputGrad) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, g.Src(g.src_type),
        g.AnyWeights(g.weights_type), g.Dst(g.dst_type), g.strides, g.dilation, g.pad_lo,
        g.pad_hi, g.Forward(), Attr());
    return WithWeights<dnnl::convolution_backward_data>(pd, user, pd.weights_desc(), false);
  }
  Geometry hint = g;
  hint.weights_type = g.src_type;  // The forward hint computes in the inputs' type.
  const auto direct = dnnl::algorithm::convolution_direct;
  auto pd = g.bias.empty()
      ? dnnl::convolution_backward_weights::primitive_desc(
            Engine(), direct, g.Src(g.src_type), g.AnyWeights(g.weights_type),
            g.Dst(g.dst_type), g.strides, g.dilation, g.pad_lo, g.pad_hi, hint.Forward(),
            Attr())
      : dnnl::convolution_backward_weights::primitive_desc(
            Engine(), direct, g.Src(g.src_type), g.AnyWeights(g.weights_type), g.Bias(),
            g.Dst(g.dst_type), g.strides, g.dilation, g.pad_lo, g.pad_hi, hint.Forward(),
            Attr());
  return WithWeights<dnnl::convolution_backward_weights>(pd, user, pd.diff_weights_desc(),
                                                         true);
}

// Every handler: ``src``, ``weights`` and ``dst`` are the convolution's input, kernel and
// output (or their gradients); the one ``kind`` writes is its result. ``bias``, where not
// null, is the forward pass's float32 bias or the kernel gradient's second result, the
// bias's gradient; ``relu`` applies ReLU after the forward pass.
ffi::Error Convolve(Kind kind, const ffi::AnyBuffer& src, const ffi::AnyBuffer& weights,
                    const ffi::AnyBuffer& dst, int64_t stride_h, int64_t stride_w,
                    int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right,
                    int64_t groups, const ffi::AnyBuffer* bias = nullptr, bool relu = false) {
  static const char* const kNames[] = {"forward", "input_grad", "kernel_grad"};
  static const int kArgs[][3] = {  // Source, destination and kernel argument per kind.
      {DNNL_ARG_SRC, DNNL_ARG_DST, DNNL_ARG_WEIGHTS},
      {DNNL_ARG_DIFF_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS},
      {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS}};
  Geometry g;
  auto status = Describe(src, weights, dst, stride_h, stride_w, pad_top, pad_bottom, pad_left,
                         pad_right, groups, &g);
  if (status.failure()) return status;
  if (bias != nullptr) {
    auto bd = bias->dimensions();
    if (bias->element_type() != ffi::DataType::F32 || bd.size() != 1 || bd[0] != g.dst[1]) {
      return ffi::Error::InvalidArgument("medjax oneDNN conv: a float32 bias per output expected");
    }
    g.bias = {bd[0]};
  }
  g.relu = relu;
  const int k = static_cast<int>(kind);
  try {
    auto plan = Cached(g.Key(kNames[k]), [&] { return MakePlan(kind, g); });
    std::unordered_map<int, memory> args{
        {kArgs[k][0], memory(g.Src(g.src_type), Engine(), src.untyped_data())},
        {kArgs[k][1], memory(g.Dst(g.dst_type), Engine(), dst.untyped_data())}};
    if (bias != nullptr) {
      args.emplace(kind == Kind::kForward ? DNNL_ARG_BIAS : DNNL_ARG_DIFF_BIAS,
                   memory(g.Bias(), Engine(), bias->untyped_data()));
    }
    return Run(plan, weights.untyped_data(), kind == Kind::kKernelGrad, std::move(args),
               kArgs[k][2]);
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("medjax oneDNN conv: ") + e.what());
  }
}

#define MEDJAX_HANDLER(name, kind, src, weights, dst, first, second, result)              \
  ffi::Error name(ffi::AnyBuffer first, ffi::AnyBuffer second,                           \
                  ffi::Result<ffi::AnyBuffer> result, int64_t stride_h, int64_t stride_w, \
                  int64_t pad_top, int64_t pad_bottom, int64_t pad_left,                  \
                  int64_t pad_right, int64_t groups) {                                    \
    return Convolve(kind, src, weights, dst, stride_h, stride_w, pad_top, pad_bottom,    \
                    pad_left, pad_right, groups);                                         \
  }

// y from x and the kernel; dL/dx from dy and the kernel; dL/dkernel from x and dy.
MEDJAX_HANDLER(Forward, Kind::kForward, x, w, *y, x, w, y)
MEDJAX_HANDLER(InputGrad, Kind::kInputGrad, *dx, w, dy, dy, w, dx)
MEDJAX_HANDLER(KernelGrad, Kind::kKernelGrad, x, *dw, dy, x, dy, dw)

// relu(x * kernel + bias), ReLU where ``relu``; and dL/dkernel with dL/dbias from x and dy.
ffi::Error ForwardBias(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer b,
                       ffi::Result<ffi::AnyBuffer> y, int64_t stride_h, int64_t stride_w,
                       int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right,
                       int64_t groups, int64_t relu) {
  return Convolve(Kind::kForward, x, w, *y, stride_h, stride_w, pad_top, pad_bottom, pad_left,
                  pad_right, groups, &b, relu != 0);
}

ffi::Error KernelBiasGrad(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                          ffi::Result<ffi::AnyBuffer> db, int64_t stride_h, int64_t stride_w,
                          int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                          int64_t pad_right, int64_t groups) {
  return Convolve(Kind::kKernelGrad, x, *dw, dy, stride_h, stride_w, pad_top, pad_bottom,
                  pad_left, pad_right, groups, &*db);
}

// c[i] = a[i] @ b[i] over a leading batch axis (``transpose_a`` / ``transpose_b``: a[i]^T,
// b[i]^T, read in place by strides), a and b float32 or bfloat16, c float32: the
// tile-position products of Winograd's convolution and bfloat16 dense layers' products,
// which oneDNN's matmul runs as fast as XLA:CPU's dots or faster (docs/performance.md).
ffi::Error BatchedMatmul(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> c,
                         int64_t transpose_a, int64_t transpose_b) {
  auto ad = a.dimensions(), bd = b.dimensions(), cd = c->dimensions();
  memory::data_type a_type, b_type, c_type;
  if (ad.size() != 3 || bd.size() != 3 || cd.size() != 3 || !ToDnnl(a.element_type(), &a_type) ||
      !ToDnnl(b.element_type(), &b_type) || !ToDnnl(c->element_type(), &c_type)) {
    return ffi::Error::InvalidArgument(
        "medjax oneDNN matmul: rank-3 float32 or bfloat16 operands expected");
  }
  const int64_t batch = ad[0], m = transpose_a ? ad[2] : ad[1], k = transpose_a ? ad[1] : ad[2];
  const int64_t n = transpose_b ? bd[1] : bd[2];
  if (bd[0] != batch || (transpose_b ? bd[2] : bd[1]) != k || cd[0] != batch || cd[1] != m ||
      cd[2] != n) {
    return ffi::Error::InvalidArgument("medjax oneDNN matmul: shapes do not chain");
  }
  const memory::desc src({batch, m, k}, a_type,
                         transpose_a ? memory::dims{m * k, 1, m} : memory::dims{m * k, k, 1});
  const memory::desc weights({batch, k, n}, b_type,
                             transpose_b ? memory::dims{k * n, 1, k} : memory::dims{k * n, n, 1});
  const memory::desc dst({batch, m, n}, c_type, tag::abc);
  std::string key = "matmul," + std::to_string(transpose_a) + "," + std::to_string(transpose_b);
  for (auto d : {batch, m, k, n}) key += "," + std::to_string(d);
  key += ";" + std::to_string(static_cast<int>(a_type)) + "," +
         std::to_string(static_cast<int>(b_type)) + "," + std::to_string(static_cast<int>(c_type));
  try {
    auto plan = Cached(key, [&] {
      auto pd = dnnl::matmul::primitive_desc(Engine(), src, weights, dst, Attr());
      return WithWeights<dnnl::matmul>(pd, weights, weights, false);
    });
    return Run(plan, b.untyped_data(), false,
               {{DNNL_ARG_SRC, memory(src, Engine(), a.untyped_data())},
                {DNNL_ARG_DST, memory(dst, Engine(), c->untyped_data())}},
               DNNL_ARG_WEIGHTS);
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("medjax oneDNN matmul: ") + e.what());
  }
}

}  // namespace

#define MEDJAX_WINDOW(binding)                               \
  binding                                                    \
      .Attr<int64_t>("stride_h")                             \
      .Attr<int64_t>("stride_w")                             \
      .Attr<int64_t>("pad_top")                              \
      .Attr<int64_t>("pad_bottom")                           \
      .Attr<int64_t>("pad_left")                             \
      .Attr<int64_t>("pad_right")                            \
      .Attr<int64_t>("groups")

#define MEDJAX_BIND \
  MEDJAX_WINDOW(ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>())

XLA_FFI_DEFINE_HANDLER_SYMBOL(MedjaxConvForward, Forward, MEDJAX_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(MedjaxConvInputGrad, InputGrad, MEDJAX_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(MedjaxConvKernelGrad, KernelGrad, MEDJAX_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(MedjaxConvForwardBias, ForwardBias,
                              MEDJAX_WINDOW(ffi::Ffi::Bind()
                                                .Arg<ffi::AnyBuffer>()
                                                .Arg<ffi::AnyBuffer>()
                                                .Arg<ffi::AnyBuffer>()
                                                .Ret<ffi::AnyBuffer>())
                                  .Attr<int64_t>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(MedjaxConvKernelBiasGrad, KernelBiasGrad,
                              MEDJAX_WINDOW(ffi::Ffi::Bind()
                                                .Arg<ffi::AnyBuffer>()
                                                .Arg<ffi::AnyBuffer>()
                                                .Ret<ffi::AnyBuffer>()
                                                .Ret<ffi::AnyBuffer>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(MedjaxBatchedMatmul, BatchedMatmul,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("transpose_a")
                                  .Attr<int64_t>("transpose_b"));

// The instruction set oneDNN dispatches to here (a dnnl_cpu_isa_t, after any
// ONEDNN_MAX_CPU_ISA limit): onednn.py sends bfloat16 only where it has bfloat16 kernels.
extern "C" int MedjaxOnednnCpuIsa() { return static_cast<int>(dnnl::get_effective_cpu_isa()); }
